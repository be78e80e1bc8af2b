//! What a profile was set up for (the EHR and its sign-on), kept in the encrypted database.

use super::*;

/// The EHR and sign-on settings a profile was made with. Plain data: the comparison is the
/// caller's (hearth-core's profile rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileBinding {
    pub fhir_base_url: String,
    /// The identity provider's issuer; `None`: the profile was made without sign-on.
    pub issuer: Option<String>,
    pub client_id: Option<String>,
}

impl Store {
    /// The settings this profile is bound to, if it is bound yet.
    pub fn profile_binding(&self) -> Result<Option<ProfileBinding>> {
        read(&self.reader())
    }

    /// Binds the profile to `binding` unless it is bound already (a binding is never
    /// replaced); returns the binding that holds now, durably written.
    pub fn bind_profile(&self, binding: &ProfileBinding) -> Result<ProfileBinding> {
        self.durably(|tx| {
            tx.execute(
                "INSERT INTO profile_binding (id, fhir_base_url, issuer, client_id, bound_at)
                 VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
                params![
                    binding.fhir_base_url,
                    binding.issuer,
                    binding.client_id,
                    now()
                ],
            )?;
            read(tx)?.ok_or(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        })
    }
}

fn read(conn: &Connection) -> Result<Option<ProfileBinding>> {
    Ok(conn
        .query_row(
            "SELECT fhir_base_url, issuer, client_id FROM profile_binding WHERE id = 1",
            [],
            |r| {
                Ok(ProfileBinding {
                    fhir_base_url: r.get(0)?,
                    issuer: r.get(1)?,
                    client_id: r.get(2)?,
                })
            },
        )
        .optional()?)
}
