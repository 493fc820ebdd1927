# The Vault/OpenBao policy Flowgate needs, and no more (default mounts `secret` and `transit`;
# change the prefixes with FLOWGATE_VAULT_KV_MOUNT / FLOWGATE_VAULT_TRANSIT_MOUNT).
# tests/api/vault.rs runs Flowgate under exactly this policy through AppRole.

# Tenant records (API-key pepper, payload keys, secret values): KV v2 under flowgate/.
path "secret/data/flowgate/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "secret/metadata/flowgate/*" {
  capabilities = ["read", "list", "delete"]
}

# Tenant keys that never leave Vault (audit signing, the data KEK): transit keys flowgate-t-*,
# created, rotated, made deletable and deleted with their tenant.
path "transit/keys/flowgate-t-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "transit/keys" {
  capabilities = ["list"]
}
path "transit/encrypt/flowgate-t-*" {
  capabilities = ["update"]
}
path "transit/decrypt/flowgate-t-*" {
  capabilities = ["update"]
}
path "transit/rewrap/flowgate-t-*" {
  capabilities = ["update"]
}
path "transit/sign/flowgate-t-*" {
  capabilities = ["update"]
}
path "transit/verify/flowgate-t-*" {
  capabilities = ["update"]
}

# Flowgate checks at start that the transit mount exists.
path "sys/mounts" {
  capabilities = ["read"]
}
