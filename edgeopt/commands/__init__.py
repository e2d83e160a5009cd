"""The library behind each reporting command (`inspect`, `profile`, `targets calibrate`): each takes
settings and an event sink and returns a typed result; the CLI only parses flags and renders."""
