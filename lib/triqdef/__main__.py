from triqdef.cli import main

raise SystemExit(main())
