-- Stream tickets already redeemed (POST /ws-ticket): the first API process to redeem a
-- ticket records its id, so a ticket opens one socket only. Rows outlive the ticket by a
-- minute and are swept by the API; nothing else reads them.
CREATE TABLE ws_tickets_redeemed (
    ticket_id  uuid        PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX ws_tickets_redeemed_expiry_idx ON ws_tickets_redeemed (expires_at);
