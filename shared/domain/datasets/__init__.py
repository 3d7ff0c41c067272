"""Labelled image sets: reading them, the fixed validation split, and converting public sets into one."""
