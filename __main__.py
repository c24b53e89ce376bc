"""The Pulumi program: one stack per PE environment (`Pulumi.<stack>.yaml`, keys `pe:*`).

Reads and validates the stack's configuration (a wrong key fails the preview with its
name and what it expects) and builds the PeDeployment - see components/program.py and
README, "Configuration".
"""

from components.program import main

main()
