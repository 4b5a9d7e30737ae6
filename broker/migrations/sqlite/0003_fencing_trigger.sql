-- Taking a lease is one INSERT: its fencing token is the device's counter + 1,
-- and this trigger moves the counter in the same statement (one round trip per reserve).
CREATE TRIGGER leases_bump_fencing AFTER INSERT ON leases
BEGIN
    UPDATE devices SET fencing_counter = NEW.fencing_token WHERE id = NEW.device_id;
END;
