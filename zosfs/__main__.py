from zosfs.cli import main

raise SystemExit(main())
