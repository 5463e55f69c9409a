import sys

from lab.template.build import main

sys.exit(main())
