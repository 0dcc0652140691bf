//! Catalog access shared by every capability: validating table and column
//! arguments, keys, partitions, and quoting names for generated SQL.
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::spi::SpiError;
use pgrx::{FromDatum, IntoDatum};

use crate::errors::{fail, Code, InvariantError};

/// A `regclass` value as a function argument or result. Unlike pgrx's
/// `PgRelation` it does not open the relation, so the extension can report a
/// missing table itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Regclass(pub Oid);

impl FromDatum for Regclass {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: Oid) -> Option<Self> {
        // SAFETY: a regclass datum is an oid passed by value.
        unsafe { Oid::from_polymorphic_datum(datum, is_null, pg_sys::OIDOID) }.map(Regclass)
    }
}

impl IntoDatum for Regclass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }
    fn type_oid() -> Oid {
        pg_sys::REGCLASSOID
    }
}

pgrx::impl_sql_translatable!(Regclass, "regclass");

// SAFETY: a regclass argument is an oid datum, which FromDatum reads.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Regclass {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        // SAFETY: the caller guarantees a non-null regclass argument.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(Regclass(pg_sys::InvalidOid))
    }

    unsafe fn unbox_nullable_arg(arg: pgrx::callconv::Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above; NULL becomes Nullable::Null.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: returns the oid by value, as a regclass result is.
unsafe impl pgrx::callconv::BoxRet for Regclass {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: an oid datum is a valid return value for a regclass result.
        unsafe { fcinfo.return_raw_datum(pg_sys::Datum::from(self.0)) }
    }
}

/// Unwraps an SPI result; SPI-level failures are internal errors, since every
/// statement the extension runs is its own.
pub fn spi<T>(result: Result<T, SpiError>) -> T {
    match result {
        Ok(value) => value,
        // untestable: an SPI failure of a statement the extension wrote, not caused by input
        Err(error) => fail(
            Code::ERRCODE_INTERNAL_ERROR,
            format!("pg_invariants: SPI failed: {error}"),
        ),
    }
}

pub use pg_invariants_core::quote::{display_ident, quote_ident, quote_literal};

/// The oid of the relation a (possibly qualified) name stands for, if any.
pub fn oid_of(name: &str) -> Option<Oid> {
    crate::sql::one::<Oid>("SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", &[name.into()])
}

/// A user table (plain or partitioned) that a capability is declared on.
#[derive(Debug, Clone)]
pub struct Table {
    pub oid: Oid,
    pub schema: String,
    pub name: String,
    pub partitioned: bool,
}

impl Table {
    /// `"schema"."name"`, ready for generated SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name`, for messages.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Looks a table up by oid without checking who may use it.
    pub fn lookup(oid: Oid) -> Option<Table> {
        let row = crate::sql::three::<String, String, String>(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1",
            &[oid.into()],
        );
        match row? {
            (Some(schema), Some(name), Some(kind)) => Some(Table {
                oid,
                schema,
                name,
                partitioned: kind == "p",
            }),
            _ => None,
        }
    }
}

/// Validates a `regclass` argument named `arg`: it must be given, exist,
/// and be a table or partitioned table outside the extension's schema.
pub fn existing_table_arg(tbl: Option<Regclass>, arg: &str) -> Table {
    let Some(Regclass(oid)) = tbl else {
        fail(
            Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("argument {arg} must not be NULL"),
        );
    };
    let kind = crate::sql::one::<String>(
        "SELECT c.relkind::text FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[oid.into()],
    );
    let (Some(kind), Some(table)) = (kind, Table::lookup(oid)) else {
        fail(
            Code::ERRCODE_UNDEFINED_TABLE,
            format!("argument {arg}: no table with OID {} exists", oid.to_u32()),
        );
    };
    if kind != "r" && kind != "p" {
        InvariantError::new(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!(
                "argument {arg}: \"{}\" is {}, not a table",
                table.display(),
                relkind_noun(&kind)
            ),
        )
        .hint("pg_invariants works on ordinary and partitioned tables.")
        .raise();
    }
    if table.schema == "invariants" {
        fail(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "argument {arg}: \"{}\" belongs to pg_invariants itself",
                table.display()
            ),
        );
    }
    table
}

/// Validates a `regclass` argument named `arg` as [`existing_table_arg`]
/// does, and that the current user owns the table (or belongs to the
/// owning role).
pub fn table_arg(tbl: Option<Regclass>, arg: &str) -> Table {
    let table = existing_table_arg(tbl, arg);
    let is_owner = crate::sql::one::<bool>(
        "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[table.oid.into()],
    );
    if is_owner != Some(true) {
        InvariantError::new(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of table {}", table.display()),
        )
        .hint("Only the table's owner (or a member of the owning role) can change its invariants.")
        .table(&table.schema, &table.name)
        .raise();
    }
    table
}

fn relkind_noun(kind: &str) -> &'static str {
    match kind {
        "v" => "a view",
        "m" => "a materialized view",
        "i" | "I" => "an index",
        "S" => "a sequence",
        "f" => "a foreign table",
        "c" => "a composite type",
        "t" => "a TOAST table",
        _ => "not a table",
    }
}

/// A live (not dropped) column of a table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub attnum: i16,
    pub type_oid: Oid,
    /// The type as `format_type` spells it, e.g. `timestamp with time zone`
    /// (schema-qualified unless in pg_catalog, since queries run with
    /// `search_path` pinned).
    pub type_name: String,
    pub typmod: i32,
    pub collation: Oid,
    /// A stored generated column.
    pub generated: bool,
}

/// Every live column of `oid`, in attribute order.
pub fn columns(oid: Oid) -> Vec<Column> {
    Spi::connect(|client| {
        let rows = spi(client.select(
            "SELECT attname::text, attnum, atttypid, pg_catalog.format_type(atttypid, atttypmod),
                    atttypmod, attcollation, attgenerated <> ''
               FROM pg_catalog.pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped
              ORDER BY attnum",
            None,
            &[oid.into()],
        ));
        rows.map(|row| Column {
            name: spi(row.get::<String>(1)).unwrap_or_default(),
            attnum: spi(row.get::<i16>(2)).unwrap_or_default(),
            type_oid: spi(row.get::<Oid>(3)).unwrap_or(pg_sys::InvalidOid),
            type_name: spi(row.get::<String>(4)).unwrap_or_default(),
            typmod: spi(row.get::<i32>(5)).unwrap_or(-1),
            collation: spi(row.get::<Oid>(6)).unwrap_or(pg_sys::InvalidOid),
            generated: spi(row.get::<bool>(7)).unwrap_or(false),
        })
        .collect()
    })
}

/// Validates a column-name argument named `arg` against `table`.
pub fn column_arg(table: &Table, name: &str, arg: &str) -> Column {
    match columns(table.oid).into_iter().find(|c| c.name == name) {
        Some(column) => column,
        None => InvariantError::new(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "argument {arg}: column \"{name}\" of table {} does not exist",
                table.display()
            ),
        )
        .raise(),
    }
}

/// The columns that identify a row, for messages and `key` values: the
/// primary key, else the first unique index without nulls, else none.
pub fn key_columns(oid: Oid) -> Vec<String> {
    let names = crate::sql::one::<Vec<String>>(
        "SELECT array_agg(a.attname::text ORDER BY k.ord)
           FROM (SELECT i.indkey, i.indisprimary FROM pg_catalog.pg_index i
                  WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                    AND i.indimmediate
                  ORDER BY i.indisprimary DESC, i.indexrelid LIMIT 1) x
           CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_catalog.pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum",
        &[oid.into()],
    );
    names.unwrap_or_default()
}

/// `oid` and every table below it, at any depth: partitions and
/// inheritance children, parents before children.
pub fn self_and_descendants(oid: Oid) -> Vec<Oid> {
    let oids = crate::sql::one::<Vec<Oid>>(
        "WITH RECURSIVE tree(relid, depth) AS (
             SELECT $1::pg_catalog.oid, 0
             UNION
             SELECT i.inhrelid, t.depth + 1 FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.relid)
         SELECT array_agg(relid ORDER BY depth, relid) FROM (SELECT relid, min(depth) AS depth FROM tree GROUP BY relid) s",
        &[oid.into()],
    );
    match oids {
        Some(oids) if !oids.is_empty() => oids,
        _ => vec![oid],
    }
}

/// `oid` and every table above it (partitioned tables and inheritance
/// parents), nearest first.
pub fn self_and_ancestors(oid: Oid) -> Vec<Oid> {
    let oids = crate::sql::one::<Vec<Oid>>(
        "WITH RECURSIVE up(relid, depth) AS (
             SELECT $1::pg_catalog.oid, 0
             UNION
             SELECT i.inhparent, u.depth + 1 FROM pg_catalog.pg_inherits i JOIN up u ON i.inhrelid = u.relid)
         SELECT array_agg(relid ORDER BY depth, relid) FROM (SELECT relid, min(depth) AS depth FROM up GROUP BY relid) s",
        &[oid.into()],
    );
    oids.unwrap_or_else(|| vec![oid])
}

/// True when `oid` has a trigger named `name`.
pub fn has_trigger(oid: Oid, name: &str) -> bool {
    crate::sql::one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2)",
        &[oid.into(), name.into()],
    ) == Some(true)
}

/// Tells every backend to forget what it cached about `oid` and its
/// partitions, at commit.
pub fn invalidate(oid: Oid) {
    for relid in self_and_descendants(oid) {
        // SAFETY: queues an invalidation message; the relation need not be open.
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    }
}

/// An ON DELETE CASCADE foreign key from `child` to a parent.
#[derive(Debug, Clone)]
pub struct CascadeKey {
    pub child: Table,
    pub child_columns: Vec<String>,
    pub parent: Table,
    pub parent_columns: Vec<String>,
    /// The key's own equality operators (parent = child), schema-qualified
    /// as `OPERATOR(schema.=)`, as Postgres' foreign-key queries use them:
    /// no operator of a caller's search_path can stand in.
    pub equality: Vec<String>,
}

impl CascadeKey {
    /// `c.a = p.x AND c.b = p.y` for aliases `c` (child) and `p` (parent).
    pub fn join(&self) -> String {
        self.join_as("c", "p")
    }

    /// The same join for other aliases.
    pub fn join_as(&self, child: &str, parent: &str) -> String {
        self.child_columns
            .iter()
            .zip(&self.parent_columns)
            .zip(&self.equality)
            .map(|((c, p), op)| format!("{parent}.{} {op} {child}.{}", quote_ident(p), quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// ON DELETE CASCADE keys referencing `parent` (`to_parent`) or held by
/// `child` (otherwise).
pub fn cascade_keys(relid: Oid, to_parent: bool) -> Vec<CascadeKey> {
    let side = if to_parent { "c.confrelid" } else { "c.conrelid" };
    type Row = (Oid, Oid, Vec<String>, Vec<String>, Vec<String>);
    let rows: Vec<Row> = Spi::connect(|client| {
        let result = spi(client.select(
            &format!(
                "SELECT c.conrelid, c.confrelid,
                        ARRAY(SELECT 'OPERATOR(' || pg_catalog.quote_ident(n.nspname) || '.' || o.oprname || ')'
                                FROM unnest(c.conpfeqop) WITH ORDINALITY e(op, i)
                                JOIN pg_catalog.pg_operator o ON o.oid = e.op
                                JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace ORDER BY e.i),
                        ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                                JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                        ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                                JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
                   FROM pg_catalog.pg_constraint c
                  WHERE c.contype = 'f' AND c.confdeltype = 'c' AND c.conparentid = 0 AND {side} = ANY ($1)
                  ORDER BY c.oid"
            ),
            None,
            &[self_and_ancestors(relid).into()],
        ));
        result
            .map(|row| {
                (
                    spi(row.get::<Oid>(1)).unwrap_or(pg_sys::InvalidOid),
                    spi(row.get::<Oid>(2)).unwrap_or(pg_sys::InvalidOid),
                    spi(row.get::<Vec<String>>(3)).unwrap_or_default(),
                    spi(row.get::<Vec<String>>(4)).unwrap_or_default(),
                    spi(row.get::<Vec<String>>(5)).unwrap_or_default(),
                )
            })
            .collect()
    });
    rows.into_iter()
        .filter_map(|(child, parent, equality, child_columns, parent_columns)| {
            Some(CascadeKey {
                child: Table::lookup(child)?,
                child_columns,
                parent: Table::lookup(parent)?,
                parent_columns,
                equality,
            })
        })
        .collect()
}

/// A value of a query's row, copied out of SPI's memory into the memory
/// context current when the query was run.
#[derive(Debug, Clone, Copy)]
pub struct Value {
    pub datum: Option<pg_sys::Datum>,
    pub type_oid: Oid,
}

impl Value {
    /// As a query argument.
    pub fn arg(&self) -> pgrx::datum::DatumWithOid<'static> {
        match self.datum {
            // SAFETY: a value of `type_oid`, alive in the caller's memory.
            Some(datum) => unsafe { pgrx::datum::DatumWithOid::new(datum, self.type_oid) },
            None => pgrx::datum::DatumWithOid::null_oid(self.type_oid),
        }
    }
}

/// The values of the first row `sql` returns (empty when it returns none),
/// with their types. The query is run read-write, as any other.
pub fn first_row(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<Value> {
    first_row_with(sql, args, false)
}

/// [`first_row`], read with the active snapshot as it is (no new one):
/// queries run inside [`crate::sql::in_one_snapshot`] see one state.
pub fn first_row_in_snapshot(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<Value> {
    first_row_with(sql, args, true)
}

fn first_row_with(sql: &str, args: &[pgrx::datum::DatumWithOid], read_only: bool) -> Vec<Value> {
    let query = std::ffi::CString::new(sql).unwrap_or_default();
    let (mut types, mut values, nulls) = raw_args(args);
    Spi::connect(|_client| {
        // SAFETY: inside an SPI connection; the argument arrays have one
        // entry per argument; the tuple table SPI returns is read before
        // anything else runs, and each value is copied out by
        // SPI_datumTransfer into the context current at connection time.
        unsafe {
            let status = pg_sys::SPI_execute_with_args(
                query.as_ptr(),
                types.len() as i32,
                types.as_mut_ptr(),
                values.as_mut_ptr(),
                nulls.as_ptr(),
                read_only,
                1,
            );

            let table = pg_sys::SPI_tuptable;
            if status < 0 || table.is_null() || pg_sys::SPI_processed == 0 {
                return Vec::new();
            }
            let desc = (*table).tupdesc;
            let attributes = pgrx::PgTupleDesc::from_pg_unchecked(desc);
            let tuple = *(*table).vals;
            (1..=(*desc).natts)
                .filter_map(|i| Some((i, attributes.get(i as usize - 1)?)))
                .map(|(i, attr)| {
                    let mut is_null = false;
                    let datum = pg_sys::SPI_getbinval(tuple, desc, i, &mut is_null);
                    Value {
                        datum: (!is_null).then(|| pg_sys::SPI_datumTransfer(datum, attr.attbyval, attr.attlen as i32)),
                        type_oid: attr.atttypid,
                    }
                })
                .collect()
        }
    })
}

/// An operator as `OPERATOR(schema.name)`, so that no operator of a
/// caller's schemas can stand in for it.
pub fn qualified_operator(oid: Oid) -> Option<String> {
    crate::sql::one::<String>(
        "SELECT 'OPERATOR(' || pg_catalog.quote_ident(n.nspname) || '.' || o.oprname || ')'
           FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
          WHERE o.oid = $1",
        &[oid.into()],
    )
}

/// The default equality operator of a type (its B-tree or hash opclass's),
/// or None when it has none.
pub fn equality_operator(type_oid: Oid) -> Option<Oid> {
    // SAFETY: a type cache lookup of an existing type; the entry lives as
    // long as the backend.
    let eq = unsafe { (*pg_sys::lookup_type_cache(type_oid, pg_sys::TYPECACHE_EQ_OPR as i32)).eq_opr };
    (eq != pg_sys::InvalidOid).then_some(eq)
}

/// Query arguments as the arrays SPI takes: types, values, null flags.
pub fn raw_args(args: &[pgrx::datum::DatumWithOid]) -> (Vec<Oid>, Vec<pg_sys::Datum>, Vec<std::ffi::c_char>) {
    (
        args.iter().map(|a| a.oid()).collect(),
        args.iter()
            .map(|a| a.datum().map_or(pg_sys::Datum::from(0), |d| d.sans_lifetime()))
            .collect(),
        args.iter()
            .map(|a| if a.datum().is_some() { b' ' } else { b'n' } as std::ffi::c_char)
            .collect(),
    )
}

/// An array of `element_type` holding `values` (NULL elements for None),
/// built in the current memory context.
pub fn array_of(element_type: Oid, values: &[Option<pg_sys::Datum>]) -> Value {
    let (mut typlen, mut typbyval, mut typalign) = (0i16, false, 0 as std::ffi::c_char);
    let datums: Vec<pg_sys::Datum> = values.iter().map(|v| v.unwrap_or(pg_sys::Datum::from(0))).collect();
    let mut nulls: Vec<bool> = values.iter().map(Option::is_none).collect();
    let mut dims = [values.len() as i32];
    let mut lower = [1i32];
    // SAFETY: catalog lookups of an existing type; the element arrays have
    // `values.len()` entries; the array is built (copying every element)
    // in the current memory context.
    unsafe {
        pg_sys::get_typlenbyvalalign(element_type, &mut typlen, &mut typbyval, &mut typalign);
        let array = pg_sys::construct_md_array(
            datums.as_ptr() as *mut _,
            nulls.as_mut_ptr(),
            1,
            dims.as_mut_ptr(),
            lower.as_mut_ptr(),
            element_type,
            typlen as i32,
            typbyval,
            typalign,
        );
        Value {
            datum: Some(pg_sys::Datum::from(array)),
            type_oid: pg_sys::get_array_type(element_type),
        }
    }
}

/// A value in its type's text form, for messages; NULL for none.
pub fn display_value(value: &Value) -> String {
    let Some(datum) = value.datum else {
        return "NULL".into();
    };
    let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
    // SAFETY: a catalog lookup of an existing type; its output function,
    // called on a non-null value of it, returns a palloc'd C string.
    unsafe {
        pg_sys::getTypeOutputInfo(value.type_oid, &mut output, &mut varlena);
        std::ffi::CStr::from_ptr(pg_sys::OidOutputFunctionCall(output, datum))
            .to_string_lossy()
            .into_owned()
    }
}
