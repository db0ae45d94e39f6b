-- 020: the address a control room sign-in came from (Streamlit's view of the client), so that the
-- throttle pauses the address that keeps failing, not the name for everyone (mlops_cli/uiauth.py,
-- docs/CONFIGURATION.md "Control room sign-in"). NULL: not known (attempts before, or a client
-- Streamlit cannot name); such attempts share one count per name.

ALTER TABLE ui_sign_ins ADD COLUMN client TEXT;
