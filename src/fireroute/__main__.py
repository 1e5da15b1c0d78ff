from fireroute.entry import main

raise SystemExit(main())
