-- Small SQL helpers the Rust code calls.

-- True when value is valid input for the type type_oid (used to validate rule
-- values before a rule is stored). The exception block makes it a
-- subtransaction, so it is called only when rules are declared.
CREATE FUNCTION invariants.is_valid_input(value text, type_oid oid) RETURNS boolean
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE format('SELECT %L::%s', value, format_type(type_oid, NULL));
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END
$$;
