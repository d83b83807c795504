import sys

from igrpo_core.cli import main

sys.exit(main())
