"""Date and time formats of the pages (FORMAT_MODULE_PATH): times to the second, ISO-like."""
