"""DDL of the standard sample ERP schema ``erp``: seven NAV tables in snake_case.

Every table has a surrogate ``id uuid`` (the local id a coupling stores, NAV's SystemId), its
NAV natural key (``code`` or ``no``, unique, referenced by the foreign keys as NAV does), and
``last_modified_at`` maintained by a trigger of this schema (NAV's "Last Date Modified").
Record numbers (``no``) come from a sequence when none is given, like a NAV No. Series, so a
customer created from the CRM without an account number still gets one.

The DDL is idempotent (``IF NOT EXISTS`` / ``CREATE OR REPLACE``) and runs under an advisory
lock, so concurrent ``crmsync sample-data`` runs cannot race on the catalog. The change-capture
triggers crmsync needs on these tables are installed by the sync engine, not here.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors

SCHEMA = "erp"

# Dependency order: a table comes after the tables its foreign keys reference.
TABLES: tuple[str, ...] = (
    "erp.currency", "erp.salesperson", "erp.unit_of_measure", "erp.customer", "erp.contact",
    "erp.resource", "erp.item",
)


class NumberSeries(NamedTuple):
    """How a table's ``no`` is numbered when a row arrives without one (NAV's No. Series)."""

    table: str
    sequence: str
    prefix: str
    width: int
    start: int = 1

    def format(self, number: int) -> str:
        """The number as the series writes it: ``C`` + 5 digits gives ``C00042``."""
        return self.prefix + str(number).rjust(self.width, "0")


NUMBER_SERIES: tuple[NumberSeries, ...] = (
    NumberSeries("erp.customer", "erp.customer_no_seq", "C", 5),
    NumberSeries("erp.contact", "erp.contact_no_seq", "CT", 6),
    NumberSeries("erp.resource", "erp.resource_no_seq", "R", 4),
    NumberSeries("erp.item", "erp.item_no_seq", "", 4, start=1000),
)

_SEQUENCES = "\n".join(
    f"CREATE SEQUENCE IF NOT EXISTS {s.sequence} AS bigint START WITH {s.start} "
    f"MINVALUE {s.start};" for s in NUMBER_SERIES)

_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION erp.next_no(series regclass, prefix text, width integer)
RETURNS varchar LANGUAGE sql VOLATILE AS $$
    -- lpad would cut a number longer than the width; a series outgrowing it keeps all digits.
    SELECT prefix || CASE WHEN length(n) >= width THEN n ELSE lpad(n, width, '0') END
      FROM (SELECT nextval(series)::text AS n) s
$$;

-- The column default covers an INSERT that leaves "no" out; this trigger also covers one that
-- writes NULL or a blank (a sync of a CRM record without a number). Arguments: the sequence,
-- the prefix and the width of the series.
CREATE OR REPLACE FUNCTION erp.assign_no() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.no IS NULL OR btrim(NEW.no) = '' THEN
        NEW.no := erp.next_no(TG_ARGV[0]::regclass, TG_ARGV[1], TG_ARGV[2]::integer);
    END IF;
    RETURN NEW;
END $$;

-- NAV's "Last Date Modified": set on every UPDATE that changes the row, whoever writes it.
-- An UPDATE that changes nothing keeps the old stamp.
CREATE OR REPLACE FUNCTION erp.touch_last_modified_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.last_modified_at := now();
    END IF;
    RETURN NEW;
END $$;

-- NAV composes a person's Name from First Name, Middle Name and Surname. A name given on
-- INSERT is kept; a change to one of the parts composes it again.
CREATE OR REPLACE FUNCTION erp.compose_contact_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'INSERT' AND (NEW.name IS NULL OR btrim(NEW.name) = ''))
       OR (TG_OP = 'UPDATE' AND (NEW.first_name, NEW.middle_name, NEW.surname)
                                IS DISTINCT FROM (OLD.first_name, OLD.middle_name, OLD.surname))
    THEN
        NEW.name := left(concat_ws(' ', nullif(btrim(NEW.first_name), ''),
                                        nullif(btrim(NEW.middle_name), ''),
                                        nullif(btrim(NEW.surname), '')), 100);
    END IF;
    RETURN NEW;
END $$;
"""

_TABLES = r"""
CREATE TABLE IF NOT EXISTS erp.currency (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code                      varchar(10) NOT NULL CONSTRAINT currency_code_unique UNIQUE,
    description               varchar(30),
    symbol                    varchar(10),
    iso_numeric_code          varchar(3),
    -- Units of this currency per one unit of the local currency (Dataverse's exchangerate).
    exchange_rate             numeric(18,6) CONSTRAINT currency_exchange_rate_must_be_positive
                              CHECK (exchange_rate > 0),
    amount_rounding_precision numeric(18,6) NOT NULL DEFAULT 0.01,
    last_modified_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE erp.currency IS 'NAV table 4 Currency';

CREATE TABLE IF NOT EXISTS erp.salesperson (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code             varchar(20) NOT NULL CONSTRAINT salesperson_code_unique UNIQUE,
    name             varchar(50),
    email            varchar(80),
    phone_no         varchar(30),
    job_title        varchar(30),
    commission_pct   numeric(5,2) NOT NULL DEFAULT 0,
    blocked          boolean NOT NULL DEFAULT false,
    last_modified_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE erp.salesperson IS 'NAV table 13 Salesperson/Purchaser';

CREATE TABLE IF NOT EXISTS erp.unit_of_measure (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code                        varchar(10) NOT NULL CONSTRAINT unit_of_measure_code_unique UNIQUE,
    description                 varchar(50),
    international_standard_code varchar(10),
    last_modified_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE erp.unit_of_measure IS 'NAV table 204 Unit of Measure';

CREATE TABLE IF NOT EXISTS erp.customer (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    no                   varchar(20) NOT NULL
                         DEFAULT erp.next_no('erp.customer_no_seq', 'C', 5)
                         CONSTRAINT customer_no_unique UNIQUE,
    name                 varchar(100),
    name_2               varchar(50),
    address              varchar(100),
    address_2            varchar(50),
    city                 varchar(30),
    post_code            varchar(20),
    county               varchar(30),
    country_region_code  varchar(10),
    phone_no             varchar(30),
    email                varchar(80),
    home_page            varchar(80),
    vat_registration_no  varchar(20),
    currency_code        varchar(10)
                         CONSTRAINT customer_currency_code_fkey
                         REFERENCES erp.currency (code) ON UPDATE CASCADE,
    salesperson_code     varchar(20)
                         CONSTRAINT customer_salesperson_code_fkey
                         REFERENCES erp.salesperson (code) ON UPDATE CASCADE,
    payment_terms_code   varchar(10),
    credit_limit_lcy     numeric(18,2) NOT NULL DEFAULT 0,
    blocked              varchar(10) NOT NULL DEFAULT ''
                         CONSTRAINT customer_blocked_must_be_known
                         CHECK (blocked IN ('', 'Ship', 'Invoice', 'All')),
    last_modified_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE erp.customer IS 'NAV table 18 Customer';
CREATE INDEX IF NOT EXISTS customer_currency_code ON erp.customer (currency_code);
CREATE INDEX IF NOT EXISTS customer_salesperson_code ON erp.customer (salesperson_code);

CREATE TABLE IF NOT EXISTS erp.contact (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    no               varchar(20) NOT NULL
                     DEFAULT erp.next_no('erp.contact_no_seq', 'CT', 6)
                     CONSTRAINT contact_no_unique UNIQUE,
    first_name       varchar(30),
    middle_name      varchar(30),
    surname          varchar(30),
    name             varchar(100),
    job_title        varchar(30),
    email            varchar(80),
    phone_no         varchar(30),
    mobile_phone_no  varchar(30),
    customer_no      varchar(20)
                     CONSTRAINT contact_customer_no_fkey
                     REFERENCES erp.customer (no) ON UPDATE CASCADE ON DELETE SET NULL,
    last_modified_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE erp.contact IS 'NAV table 5050 Contact (persons of a customer)';
CREATE INDEX IF NOT EXISTS contact_customer_no ON erp.contact (customer_no);
-- CONTACTS matches on e-mail (case-insensitive by default).
CREATE INDEX IF NOT EXISTS contact_email ON erp.contact (lower(email));

CREATE TABLE IF NOT EXISTS erp.resource (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    no                   varchar(20) NOT NULL
                         DEFAULT erp.next_no('erp.resource_no_seq', 'R', 4)
                         CONSTRAINT resource_no_unique UNIQUE,
    name                 varchar(100),
    type                 varchar(10) NOT NULL DEFAULT 'Person'
                         CONSTRAINT resource_type_must_be_known
                         CHECK (type IN ('Person', 'Machine')),
    job_title            varchar(30),
    base_unit_of_measure varchar(10)
                         CONSTRAINT resource_base_unit_of_measure_fkey
                         REFERENCES erp.unit_of_measure (code) ON UPDATE CASCADE,
    unit_price           numeric(18,2) NOT NULL DEFAULT 0,
    unit_cost            numeric(18,2) NOT NULL DEFAULT 0,
    blocked              boolean NOT NULL DEFAULT false,
    last_modified_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE erp.resource IS 'NAV table 156 Resource';

CREATE TABLE IF NOT EXISTS erp.item (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    no                   varchar(20) NOT NULL
                         DEFAULT erp.next_no('erp.item_no_seq', '', 4)
                         CONSTRAINT item_no_unique UNIQUE,
    description          varchar(100),
    description_2        varchar(50),
    type                 varchar(20) NOT NULL DEFAULT 'Inventory'
                         CONSTRAINT item_type_must_be_known
                         CHECK (type IN ('Inventory', 'Service', 'Non-Inventory')),
    base_unit_of_measure varchar(10)
                         CONSTRAINT item_base_unit_of_measure_fkey
                         REFERENCES erp.unit_of_measure (code) ON UPDATE CASCADE,
    item_category_code   varchar(20),
    unit_price           numeric(18,2) NOT NULL DEFAULT 0,
    unit_cost            numeric(18,2) NOT NULL DEFAULT 0,
    blocked              boolean NOT NULL DEFAULT false,
    last_modified_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE erp.item IS 'NAV table 27 Item';
"""


def _trigger_ddl() -> str:
    statements = [
        f"CREATE OR REPLACE TRIGGER {table.split('.')[1]}_touch_last_modified_at "
        f"BEFORE UPDATE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION erp.touch_last_modified_at();"
        for table in TABLES
    ]
    statements += [
        f"CREATE OR REPLACE TRIGGER {s.table.split('.')[1]}_assign_no "
        f"BEFORE INSERT OR UPDATE OF no ON {s.table} "
        f"FOR EACH ROW EXECUTE FUNCTION erp.assign_no('{s.sequence}', '{s.prefix}', '{s.width}');"
        for s in NUMBER_SERIES
    ]
    statements.append(
        "CREATE OR REPLACE TRIGGER contact_compose_name "
        "BEFORE INSERT OR UPDATE OF first_name, middle_name, surname ON erp.contact "
        "FOR EACH ROW EXECUTE FUNCTION erp.compose_contact_name();")
    return "\n".join(statements)


DDL = "\n".join((
    "CREATE SCHEMA IF NOT EXISTS erp;",
    _SEQUENCES,
    _FUNCTIONS,
    _TABLES,
    _trigger_ddl(),
))
"""The whole schema as one idempotent script (what ``create_erp_schema`` runs)."""


def create_erp_schema(engine: Engine) -> None:
    """Create schema ``erp`` with its tables, sequences and triggers where missing.

    Safe to run any number of times and from concurrent processes; existing tables and their
    rows are left as they are."""
    with translate_errors(), engine.begin() as conn:
        create_erp_schema_in(conn)


def create_erp_schema_in(conn: Connection) -> None:
    """``create_erp_schema`` inside the caller's transaction."""
    # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog; serialize.
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('crmsync.erp.schema'))"))
    conn.exec_driver_sql(DDL)


def erp_schema_exists(engine: Engine) -> bool:
    """Whether the sample tables are there (all seven)."""
    with translate_errors(), engine.connect() as conn:
        present = conn.scalar(sa.text(
            "SELECT count(*) FROM unnest(CAST(:tables AS text[])) AS t(name) "
            "WHERE to_regclass(t.name) IS NOT NULL"), {"tables": list(TABLES)})
    return present == len(TABLES)


def catch_up_number_series(conn: Connection) -> None:
    """Move each sequence past the highest number already used in its table, so a row
    inserted later without a number does not collide with one loaded with an explicit
    number (sample data, an import). Never moves a sequence back."""
    for s in NUMBER_SERIES:
        pattern = "^" + s.prefix + "([0-9]{1,18})$"
        conn.execute(sa.text(
            f"""
            SELECT setval(CAST(:seq AS regclass), used.m, true)
              FROM (SELECT max(CAST(substring(no FROM :pattern) AS bigint)) AS m
                      FROM {s.table}) used,
                   (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS n
                      FROM {s.sequence}) current
             WHERE used.m > current.n
            """), {"seq": s.sequence, "pattern": pattern})
