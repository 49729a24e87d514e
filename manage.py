#!/usr/bin/env python
"""Django's command-line utility for CrossEdge."""

import getpass
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    from django.core.management import execute_from_command_line

    from dashboard.audit.actor import acting_as

    # What a command changes is recorded as the command's (rule history, audit trail).
    with acting_as(f"cli: {' '.join(sys.argv[1:2]) or 'manage.py'} ({getpass.getuser()})"):
        execute_from_command_line(sys.argv)
