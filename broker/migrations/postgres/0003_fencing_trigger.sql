-- Taking a lease is one INSERT: its fencing token is the device's counter + 1,
-- and this trigger moves the counter in the same statement (one round trip per reserve).
CREATE FUNCTION leases_bump_fencing() RETURNS trigger AS $$
BEGIN
    UPDATE devices SET fencing_counter = NEW.fencing_token WHERE id = NEW.device_id;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER leases_bump_fencing AFTER INSERT ON leases
    FOR EACH ROW EXECUTE FUNCTION leases_bump_fencing();
