# Shared settings for Hearth's scripts (sourced, not run).
# Cargo's target dir lives outside the clone so that a machine that already built
# reuses the compiled dependencies; a cold machine still builds everything.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME}/.cache/hearth/target}"
export PATH="${HOME}/.cargo/bin:${PATH}"
export TAURI_DRIVER_VERSION="2.1.0"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Test peers installed from the registries (the FHIR server, ...).
export HEARTH_PEERS="${HEARTH_PEERS:-${HOME}/.cache/hearth/peers}"
# The ICD-10-CM table of the visit note's diagnosis picker, built by scripts/codes from CMS's
# tabular list (code<TAB>description, billable codes only).
export HEARTH_ICD10CM_FILE="${HEARTH_ICD10CM_FILE:-${HOME}/.cache/hearth/codes/icd10cm-2026.tsv}"
