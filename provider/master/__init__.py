"""The compile master procedure: its inputs (config), its steps, checking first and
verifying after (steps), and its removal, one master or a group leaving together (removal)."""
