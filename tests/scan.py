"""Where a value is stored: every column of every table, read as text (erasure tests)."""

from __future__ import annotations


def places_holding(db, needle: str) -> list[tuple[str, str, int]]:
    """(table, column, rows) of every column of every table in which `needle` occurs in some
    row's value read as text (bytea decoded, arrays and JSON as their text)."""
    columns = db.execute_sql(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
        " JOIN information_schema.tables t ON t.table_schema = c.table_schema"
        "  AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'"
        " WHERE c.table_schema = 'public' ORDER BY 1, 2"
    ).fetchall()
    found = []
    for table, column, data_type in columns:
        value = f"encode(\"{column}\", 'escape')" if data_type == "bytea" else f'"{column}"::text'
        (count,) = db.execute_sql(
            f'SELECT count(*) FROM "{table}" WHERE {value} LIKE %s', (f"%{needle}%",)
        ).fetchone()
        if count:
            found.append((table, column, count))
    return found
