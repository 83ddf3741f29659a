/** Who may connect to whom. The rule is AppSwitch's: a client may connect to a service when the two apps share
 * at least one tag (K=V); an app without tags has the tag zone=default. Rules are objects behind one interface,
 * so richer ones (allow lists, expressions) can be added and chained without touching the trap handler. */

export type Tags = Readonly<Record<string, string>>;

export const DEFAULT_TAGS: Tags = Object.freeze({ zone: 'default' });

/** The tags an app is judged by: its own, or zone=default when it has none. */
export function effectiveTags(tags: Tags): Tags {
  return Object.keys(tags).length ? tags : DEFAULT_TAGS;
}

/** One side of a connection, as policy sees it. */
export interface Party {
  appId: string;
  identity: string;
  tags: Tags;
}

export interface Decision {
  allow: boolean;
  /** Why, for the log line. */
  reason: string;
}

/** A connection rule. Contract: pure, fast, never throws, and a decision depends only on the two parties' identities
 * and tags (the decision table, src/trap/decision-table.ts, decides once per distinct pair). */
export interface Policy {
  decide(client: Party, service: Party): Decision;
}

/** AppSwitch's rule: at least one shared K=V tag. */
export class SharedTagPolicy implements Policy {
  decide(client: Party, service: Party): Decision {
    const c = effectiveTags(client.tags);
    const s = effectiveTags(service.tags);
    for (const [k, v] of Object.entries(c)) {
      if (s[k] === v) return { allow: true, reason: `shared tag ${k}=${v}` };
    }
    return { allow: false, reason: 'no shared tag' };
  }
}

/** Members of one distributed application (same vip) always reach each other; otherwise the inner rule decides. */
export class SameAppPolicy implements Policy {
  constructor(private readonly inner: Policy) {}

  decide(client: Party, service: Party): Decision {
    if (client.identity === service.identity) return { allow: true, reason: 'same application' };
    return this.inner.decide(client, service);
  }
}

export function defaultPolicy(): Policy {
  return new SameAppPolicy(new SharedTagPolicy());
}
