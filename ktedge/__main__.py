from ktedge.cli import main

raise SystemExit(main())
