-- What a profile was set up for: the EHR its records came from and the sign-on that guards
-- them. Written once, when the profile is first opened; Hearth refuses to open the profile under
-- other settings (a configuration without sign-in over a profile made with it). Inside the
-- encrypted database, so it cannot be changed without the key.
CREATE TABLE profile_binding (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    fhir_base_url TEXT NOT NULL,
    -- NULL: the profile was made without sign-on (an EHR on loopback that asks for none).
    issuer        TEXT,
    client_id     TEXT,
    bound_at      TEXT NOT NULL
);
