-- The user aggregate (contract §4): users, phone_numbers, drill_statuses, drill_instances,
-- all hanging off users, plus the drill catalog that new users' drill_statuses are built from.

CREATE TABLE drills (
    drill_slug        text        PRIMARY KEY CHECK (drill_slug ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    drill_name        text        NOT NULL,
    place_in_sequence integer     NOT NULL CHECK (place_in_sequence >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT drills_place_unique UNIQUE (place_in_sequence) DEFERRABLE INITIALLY IMMEDIATE
);

INSERT INTO drills (drill_slug, drill_name, place_in_sequence) VALUES
    ('01-sample-drill', '01-sample-drill', 0),
    ('02-sample-drill', '02-sample-drill', 1),
    ('03-sample-drill', '03-sample-drill', 2);

CREATE TABLE users (
    user_id              uuid          PRIMARY KEY,
    seq                  numeric(30,0) NOT NULL,
    profile              jsonb         NOT NULL DEFAULT '{}'::jsonb,
    last_interacted_time timestamptz,
    created_at           timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX users_last_interacted_time_idx ON users (last_interacted_time);

CREATE TABLE phone_numbers (
    id           uuid    PRIMARY KEY,
    phone_number text    NOT NULL UNIQUE,
    user_id      uuid    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    is_primary   boolean NOT NULL DEFAULT true
);
CREATE INDEX phone_numbers_user_id_idx ON phone_numbers (user_id);

CREATE TABLE drill_statuses (
    id                uuid        PRIMARY KEY,
    user_id           uuid        NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    drill_instance_id uuid,
    drill_slug        text        NOT NULL REFERENCES drills (drill_slug),
    place_in_sequence integer     NOT NULL,
    started_time      timestamptz,
    completed_time    timestamptz,
    CONSTRAINT drill_statuses_user_slug_unique UNIQUE (user_id, drill_slug),
    -- deferrable so that a rollout can shift later drills by one inside its transaction
    CONSTRAINT drill_statuses_user_place_unique UNIQUE (user_id, place_in_sequence)
        DEFERRABLE INITIALLY IMMEDIATE
);
CREATE INDEX drill_statuses_drill_instance_id_idx ON drill_statuses (drill_instance_id)
    WHERE drill_instance_id IS NOT NULL;

CREATE TABLE drill_instances (
    drill_instance_id                 uuid        PRIMARY KEY,
    user_id                           uuid        NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    phone_number                      text        NOT NULL,
    drill_slug                        text        NOT NULL,
    current_prompt_slug               text,
    current_prompt_start_time         timestamptz,
    current_prompt_last_response_time timestamptz,
    completion_time                   timestamptz,
    is_valid                          boolean     NOT NULL DEFAULT true,
    created_at                        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX drill_instances_user_id_idx ON drill_instances (user_id);
-- serves the reminder query: valid, incomplete instances by current prompt start
CREATE INDEX drill_instances_reminder_idx ON drill_instances (current_prompt_start_time)
    WHERE is_valid AND completion_time IS NULL;
