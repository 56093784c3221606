"""The u2eval command line. Imports anything; nothing imports it."""
