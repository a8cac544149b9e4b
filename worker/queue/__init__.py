"""The job queue: entries as users write them, the pure scheduling rules, and the SQL that
claims, finishes and rescues runs."""
