//! Named sync cursors.

use super::*;

impl Store {
    pub fn cursor(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT value FROM sync_cursor WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_cursor(&self, name: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO sync_cursor (name, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![name, value, now()],
        )?;
        Ok(())
    }
}
