-- Kitchen Pantry CRM: the sample database the runbook talks about.
-- Organizations (restaurants, food banks) with users, contacts, interactions,
-- pantry stock and orders. Exercises foreign keys, indexes, a view, a trigger,
-- a standalone sequence, an enum, a domain and jsonb.

CREATE TYPE interaction_kind AS ENUM ('call', 'email', 'meeting', 'visit', 'note');
CREATE DOMAIN email_address AS text CHECK (VALUE ~ '^[^@[:space:]]+@[^@[:space:]]+$');

CREATE TABLE organizations (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    industry    text NOT NULL,
    city        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    metadata    jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE users (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations (id),
    email           email_address NOT NULL UNIQUE,
    full_name       text NOT NULL,
    role            text NOT NULL DEFAULT 'staff',
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_login      timestamptz
);

CREATE TABLE contacts (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations (id),
    owner_id        bigint REFERENCES users (id),
    first_name      text NOT NULL,
    last_name       text NOT NULL,
    email           email_address,
    phone           text,
    notes           text,
    tags            text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_organization_idx ON contacts (organization_id);
CREATE INDEX contacts_last_name_idx ON contacts (lower(last_name));

CREATE TABLE interactions (
    id          bigserial PRIMARY KEY,
    contact_id  bigint NOT NULL REFERENCES contacts (id),
    user_id     bigint REFERENCES users (id),
    kind        interaction_kind NOT NULL,
    occurred_at timestamptz NOT NULL,
    summary     text NOT NULL,
    details     jsonb
);
CREATE INDEX interactions_contact_idx ON interactions (contact_id);
CREATE INDEX interactions_occurred_idx ON interactions (occurred_at);

CREATE TABLE pantry_items (
    id              serial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations (id),
    sku             text NOT NULL UNIQUE,
    name            text NOT NULL,
    quantity        integer NOT NULL CHECK (quantity >= 0),
    unit_price      numeric(10, 2) NOT NULL,
    expires_on      date
);

CREATE TABLE orders (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations (id),
    contact_id      bigint REFERENCES contacts (id),
    placed_at       timestamptz NOT NULL,
    status          text NOT NULL CHECK (status IN ('open', 'paid', 'shipped', 'cancelled')),
    total           numeric(12, 2) NOT NULL DEFAULT 0
);

CREATE TABLE order_items (
    order_id        bigint NOT NULL REFERENCES orders (id),
    line            integer NOT NULL,
    pantry_item_id  integer NOT NULL REFERENCES pantry_items (id),
    quantity        integer NOT NULL,
    price           numeric(10, 2) NOT NULL,
    PRIMARY KEY (order_id, line)
);

CREATE SEQUENCE invoice_number_seq START 100000;

CREATE VIEW contact_activity AS
SELECT c.id, c.first_name, c.last_name, count(i.id) AS interactions, max(i.occurred_at) AS last_interaction
FROM contacts c LEFT JOIN interactions i ON i.contact_id = c.id
GROUP BY c.id;

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER contacts_touch BEFORE UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
