from fireroute.cli.main import main

raise SystemExit(main())
