from keeperd.cli import main

raise SystemExit(main())
