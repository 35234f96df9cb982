"""English formats for the admin and other pages: `2026-12-02 02:54:07`, so a phase's
start and end show their seconds (Django's own English format stops at the minute)."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
