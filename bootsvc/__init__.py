"""The boot system: DHCP (dnsmasq), TFTP (tftpy), iPXE scripts, stage-2 and stage-3 builders."""
