from moequant.cli import main

raise SystemExit(main())
