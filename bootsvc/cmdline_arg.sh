arg() { # the value of beolaunch.$1 on the kernel command line
	for word in $(cat /proc/cmdline); do
		case "$word" in
		"beolaunch.$1="*) echo "${word#*=}"; return 0 ;;
		"beolaunch.$1") echo 1; return 0 ;;
		esac
	done
	return 1
}
