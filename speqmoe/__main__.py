from speqmoe.cli import main

raise SystemExit(main())
