"""Run settings as data (``settings``) and the project file that declares them (``project``)."""
