"""`python -m bench ...`: the same as `rgemma bench ...` (see rgemma.bench)."""

from rgemma.bench.harness import main

raise SystemExit(main())
