import sys

from tlslogd.cli import main

sys.exit(main())
