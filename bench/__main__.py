"""`python -m bench ...`: the same as `rgemma bench ...` (see rgemma.cli.bench)."""

from rgemma.cli.bench import main

raise SystemExit(main())
