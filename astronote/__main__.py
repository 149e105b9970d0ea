import sys

from astronote.cli import main

sys.exit(main())
