//! Every trigger the extension puts on user tables, declared once: its
//! name, timing, events, level, function and transition tables. The
//! extension's registry reads these declarations to install triggers, to
//! give a new partition or child its own, to refuse renaming, replacing or
//! disabling them, and to report missing or disabled ones.
use crate::fast_hash::hash_str;
use crate::quote::{quote_ident, quote_literal};

// Bits of pg_trigger.tgtype.
const ROW: i16 = 1 << 0;
const BEFORE: i16 = 1 << 1;
pub const INSERT: i16 = 1 << 2;
pub const DELETE: i16 = 1 << 3;
pub const UPDATE: i16 = 1 << 4;
pub const TRUNCATE: i16 = 1 << 5;

/// The bytes Postgres keeps of a name (NAMEDATALEN - 1).
pub const MAX_NAME_BYTES: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Before,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Row,
    Statement,
}

/// One kind of trigger of the extension's, as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// Its name; for a trigger per rule, the prefix of the rule's name.
    pub name: &'static str,
    /// The capability it serves, for messages ("rules", "audit", ...).
    pub capability: &'static str,
    /// Its function, in schema `invariants`.
    pub function: &'static str,
    pub timing: Timing,
    /// `INSERT | UPDATE | ...` bits.
    pub events: i16,
    pub level: Level,
    /// The names of the OLD and NEW transition tables, for statement
    /// triggers that read the rows.
    pub old_table: Option<&'static str>,
    pub new_table: Option<&'static str>,
}

const fn declared(
    name: &'static str,
    capability: &'static str,
    function: &'static str,
    timing: Timing,
    events: i16,
    level: Level,
) -> Declared {
    Declared {
        name,
        capability,
        function,
        timing,
        events,
        level,
        old_table: None,
        new_table: None,
    }
}

/// Row rules, checked before a row is stored (`UPDATE OF` the columns the
/// rules read).
pub const RULES: Declared = declared(
    "invariants_rules",
    "rules",
    "enforce_rules",
    Timing::Before,
    INSERT | UPDATE,
    Level::Row,
);
/// On a count rule's parent, one per rule: notes parents whose claimed
/// count changed.
pub const COUNT_PARENT: Declared = declared(
    "invariants_count_",
    "counts",
    "count_parent_changed",
    Timing::After,
    INSERT | UPDATE,
    Level::Row,
);
/// On a counted child, one per rule name: notes parents whose children
/// changed.
pub const COUNT_CHILD: Declared = declared(
    "invariants_counted_",
    "counts",
    "count_child_changed",
    Timing::After,
    INSERT | DELETE | UPDATE,
    Level::Row,
);
/// Captures deleted rows into the audit log.
pub const AUDIT_DELETE: Declared = Declared {
    old_table: Some("invariants_deleted"),
    ..declared(
        "invariants_audit_delete",
        "audit",
        "audit_delete",
        Timing::After,
        DELETE,
        Level::Statement,
    )
};
/// Captures the changed columns of updated rows.
pub const AUDIT_UPDATE: Declared = Declared {
    old_table: Some("invariants_old"),
    new_table: Some("invariants_new"),
    ..declared(
        "invariants_audit_update",
        "audit",
        "audit_update",
        Timing::After,
        UPDATE,
        Level::Statement,
    )
};
/// Refuses, or captures, TRUNCATE (for protected, soft-delete and audited
/// tables: the capability is the one that needs it).
pub const TRUNCATE_GUARD: Declared = declared(
    "invariants_truncate",
    "guards",
    "before_truncate",
    Timing::Before,
    TRUNCATE,
    Level::Statement,
);
/// Refuses an UPDATE of more rows than the table's budget.
pub const UPDATE_BUDGET: Declared = Declared {
    new_table: Some("invariants_updated"),
    ..declared(
        "invariants_update_budget",
        "guards",
        "update_budget",
        Timing::After,
        UPDATE,
        Level::Statement,
    )
};
/// Turns a DELETE of a row into setting its deleted-at column.
pub const SOFT_DELETE_ROW: Declared = declared(
    "invariants_soft_delete",
    "soft delete",
    "soft_delete_row",
    Timing::Before,
    DELETE,
    Level::Row,
);
/// Applies the soft deletes of a statement.
pub const SOFT_DELETE_APPLY: Declared = declared(
    "invariants_soft_delete_apply",
    "soft delete",
    "soft_delete_apply",
    Timing::After,
    DELETE,
    Level::Statement,
);
/// On partitions: a row moved by an UPDATE of the partition key.
pub const SOFT_DELETE_UPDATE: Declared = declared(
    "invariants_soft_delete_update",
    "soft delete",
    "soft_delete_update",
    Timing::Before,
    UPDATE,
    Level::Row,
);
/// Keeps a deleted row deleted (fires only for deleted rows).
pub const SOFT_DELETE_KEEP: Declared = declared(
    "invariants_soft_delete_keep",
    "soft delete",
    "soft_delete_keep",
    Timing::Before,
    UPDATE,
    Level::Row,
);
/// Cascades a soft delete to the rows that reference the deleted ones.
pub const SOFT_DELETE_CASCADE: Declared = declared(
    "invariants_soft_delete_cascade",
    "soft delete",
    "soft_delete_cascade",
    Timing::After,
    UPDATE,
    Level::Statement,
);

/// Every trigger the extension declares.
pub const ALL: [Declared; 12] = [
    RULES,
    COUNT_PARENT,
    COUNT_CHILD,
    AUDIT_DELETE,
    AUDIT_UPDATE,
    TRUNCATE_GUARD,
    UPDATE_BUDGET,
    SOFT_DELETE_ROW,
    SOFT_DELETE_APPLY,
    SOFT_DELETE_UPDATE,
    SOFT_DELETE_KEEP,
    SOFT_DELETE_CASCADE,
];

impl Declared {
    /// This trigger on one table.
    pub fn on_table(&self) -> Trigger {
        Trigger {
            name: self.name.to_string(),
            capability: self.capability,
            function: self.function,
            args: Vec::new(),
            timing: self.timing,
            events: self.events,
            columns: Vec::new(),
            level: self.level,
            old_table: self.old_table,
            new_table: self.new_table,
            when_old_set: None,
        }
    }

    /// This trigger for the rule named `rule`: named after it, which it
    /// gets as its argument.
    pub fn for_rule(&self, rule: &str) -> Trigger {
        Trigger {
            name: trigger_name(self.name, rule),
            args: vec![rule.to_string()],
            ..self.on_table()
        }
    }
}

/// `prefix` and a rule's name, cut to the 63 bytes Postgres keeps, with a
/// hash of the whole when cut, so that long names stay distinct.
pub fn trigger_name(prefix: &str, rule: &str) -> String {
    let name = format!("{prefix}{rule}");
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let hash = hash_str(&name);
    let mut cut = name;
    while cut.len() > MAX_NAME_BYTES - 9 {
        cut.pop();
    }
    format!("{cut}_{:08x}", hash as u32)
}

/// One trigger of the extension's on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub name: String,
    pub capability: &'static str,
    pub function: &'static str,
    pub args: Vec<String>,
    pub timing: Timing,
    pub events: i16,
    /// The columns of `UPDATE OF`, sorted; empty for any UPDATE.
    pub columns: Vec<String>,
    pub level: Level,
    pub old_table: Option<&'static str>,
    pub new_table: Option<&'static str>,
    /// A row trigger that fires only for rows whose old value of this
    /// column is set (`WHEN (OLD.column IS NOT NULL)`).
    pub when_old_set: Option<String>,
}

impl Trigger {
    /// Its pg_trigger.tgtype.
    pub fn tgtype(&self) -> i16 {
        let mut bits = self.events;
        if self.level == Level::Row {
            bits |= ROW;
        }
        if self.timing == Timing::Before {
            bits |= BEFORE;
        }
        bits
    }

    /// The CREATE TRIGGER statement for the table named `qualified`
    /// (quoted, schema-qualified).
    pub fn create_sql(&self, qualified: &str) -> String {
        let mut events = Vec::new();
        for (bit, name) in [
            (INSERT, "INSERT"),
            (DELETE, "DELETE"),
            (UPDATE, "UPDATE"),
            (TRUNCATE, "TRUNCATE"),
        ] {
            if self.events & bit != 0 {
                if bit == UPDATE && !self.columns.is_empty() {
                    let columns: Vec<String> = self.columns.iter().map(|c| quote_ident(c)).collect();
                    events.push(format!("UPDATE OF {}", columns.join(", ")));
                } else {
                    events.push(name.to_string());
                }
            }
        }
        let mut referencing = String::new();
        if let Some(name) = self.old_table {
            referencing.push_str(&format!(" OLD TABLE AS {}", quote_ident(name)));
        }
        if let Some(name) = self.new_table {
            referencing.push_str(&format!(" NEW TABLE AS {}", quote_ident(name)));
        }
        if !referencing.is_empty() {
            referencing.insert_str(0, " REFERENCING");
        }
        let args: Vec<String> = self.args.iter().map(|a| quote_literal(a)).collect();
        let when = self.when_old_set.as_ref().map_or(String::new(), |column| {
            format!(" WHEN (OLD.{} IS NOT NULL)", quote_ident(column))
        });
        format!(
            "CREATE TRIGGER {} {} {} ON {qualified}{referencing} FOR EACH {}{when} EXECUTE FUNCTION invariants.{}({})",
            quote_ident(&self.name),
            if self.timing == Timing::Before {
                "BEFORE"
            } else {
                "AFTER"
            },
            events.join(" OR "),
            if self.level == Level::Row { "ROW" } else { "STATEMENT" },
            self.function,
            args.join(", ")
        )
    }

    /// True when `when`, a WHEN condition as Postgres shows it (None for
    /// none), is this trigger's.
    pub fn same_when(&self, when: Option<&str>) -> bool {
        when.map(normalized_when)
            == self
                .when_old_set
                .as_deref()
                .map(|c| normalized_when(&format!("old.{} IS NOT NULL", quote_ident(c))))
    }
}

/// A WHEN condition as text to compare: lowercase, without quotes,
/// parentheses or spaces (Postgres shows `(old.deleted_at IS NOT NULL)`).
fn normalized_when(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '"' | '(' | ')' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_distinct_and_fit_a_name() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.name.starts_with("invariants_") && a.name.len() <= MAX_NAME_BYTES);
            for b in &ALL[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.function, b.function);
            }
        }
        assert_eq!(COUNT_PARENT.for_rule("x").name, "invariants_count_x");
        assert_eq!(COUNT_PARENT.for_rule("x").args, ["x"]);
    }

    #[test]
    fn long_rule_names_are_cut_and_stay_distinct() {
        let short = trigger_name("invariants_count_", "items");
        assert_eq!(short, "invariants_count_items");
        let a = trigger_name("invariants_count_", &"a".repeat(60));
        let b = trigger_name("invariants_count_", &format!("{}b", "a".repeat(59)));
        assert_eq!(a.len(), MAX_NAME_BYTES);
        assert_ne!(a, b);
        // Multi-byte characters are never split.
        let c = trigger_name("invariants_count_", &"é".repeat(40));
        assert!(c.len() <= MAX_NAME_BYTES);
        assert_eq!(trigger_name("invariants_count_", &"é".repeat(40)), c, "stable");
    }

    #[test]
    fn create_statements() {
        let mut rules = RULES.on_table();
        rules.columns = vec!["Status".into(), "a\"b".into()];
        assert_eq!(
            rules.create_sql("\"s\".\"t\""),
            "CREATE TRIGGER \"invariants_rules\" BEFORE INSERT OR UPDATE OF \"Status\", \"a\"\"b\" ON \"s\".\"t\" FOR EACH ROW EXECUTE FUNCTION invariants.enforce_rules()"
        );
        assert_eq!(
            AUDIT_UPDATE.on_table().create_sql("t"),
            "CREATE TRIGGER \"invariants_audit_update\" AFTER UPDATE ON t REFERENCING OLD TABLE AS \"invariants_old\" NEW TABLE AS \"invariants_new\" FOR EACH STATEMENT EXECUTE FUNCTION invariants.audit_update()"
        );
        let count = COUNT_CHILD.for_rule("it's");
        assert_eq!(
            count.create_sql("t"),
            "CREATE TRIGGER \"invariants_counted_it's\" AFTER INSERT OR DELETE OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION invariants.count_child_changed('it''s')"
        );
        let keep = Trigger {
            when_old_set: Some("deleted_at".into()),
            ..SOFT_DELETE_KEEP.on_table()
        };
        assert!(keep
            .create_sql("t")
            .contains(" FOR EACH ROW WHEN (OLD.\"deleted_at\" IS NOT NULL) EXECUTE"));
        assert!(keep.same_when(Some("(old.deleted_at IS NOT NULL)")));
        assert!(!keep.same_when(None));
        assert!(RULES.on_table().same_when(None));
    }

    #[test]
    fn tgtype_bits() {
        // As pg_trigger stores them: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32.
        assert_eq!(RULES.on_table().tgtype(), 1 | 2 | 4 | 16);
        assert_eq!(AUDIT_DELETE.on_table().tgtype(), 8);
        assert_eq!(TRUNCATE_GUARD.on_table().tgtype(), 2 | 32);
    }
}
