"""``python -m dbquota`` is ``dbquota``."""

from dbquota.cli import main

raise SystemExit(main())
