from rpa_gateway.cli import main

raise SystemExit(main())
