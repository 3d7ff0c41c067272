"""Alembic migrations, shipped inside the package so `nucleus db upgrade` works from any directory."""
