from launcher.cli.beoctl import main

raise SystemExit(main())
