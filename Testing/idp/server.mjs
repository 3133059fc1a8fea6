// A real OpenID Connect provider for the auth tests: panva's oidc-provider (a certified OP), in memory, 127.0.0.1.
//
// Usage: node server.mjs CONFIG.json  (written by Testing/oidc_provider.py: issuer, port, client, audience,
// signing keys as a private JWKS, users with their roles, token lifetimes). Prints "ready" once it listens.
//
// Added to the stock provider, through its documented extension points only:
// - a password grant (`provider.registerGrantType`): what the Slicer panel and MONAI Label's /auth/token send;
// - access tokens as JWTs for one resource server whose audience is the MONAI Label client id
//   (`features.resourceIndicators`), carrying Keycloak's `realm_access.roles` claim (`extraTokenClaims`), so
//   MONAI Label's default claim path reads the roles;
// - a refresh token with each password grant, redeemed by the provider's own refresh_token grant.
import { readFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const RESOURCE = 'urn:medfmadapt:monailabel';
const users = new Map(cfg.users.map((u) => [u.username, u]));

const resourceServer = {
  scope: 'monailabel',
  audience: cfg.audience,
  accessTokenTTL: cfg.access_token_ttl,
  accessTokenFormat: 'jwt',
  jwt: { sign: { alg: 'RS256' } },
};

const provider = new Provider(cfg.issuer, {
  clients: [{
    client_id: cfg.client_id,
    token_endpoint_auth_method: 'none', // a public client: Slicer and MONAI Label's proxy hold no secret
    grant_types: ['password', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
  }],
  jwks: cfg.jwks,
  scopes: ['openid', 'offline_access', 'monailabel'],
  findAccount: async (ctx, sub) => {
    const user = users.get(sub);
    if (!user) return undefined;
    return { accountId: sub, claims: async () => ({ sub, preferred_username: sub, email: user.email, name: user.name }) };
  },
  extraTokenClaims: async (ctx, token) => {
    const user = token.accountId && users.get(token.accountId);
    if (!user) return undefined;
    return { realm_access: { roles: user.roles }, preferred_username: user.username, email: user.email, name: user.name };
  },
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== RESOURCE) throw new errors.InvalidTarget();
        return resourceServer;
      },
    },
  },
  ttl: { AccessToken: cfg.access_token_ttl, RefreshToken: cfg.refresh_token_ttl, Grant: cfg.refresh_token_ttl },
});

async function passwordGrant(ctx) {
  const { username, password } = ctx.oidc.params;
  const user = users.get(username);
  if (!user || user.password !== password) throw new errors.InvalidGrant('wrong username or password');
  const { client } = ctx.oidc;

  const grant = new provider.Grant({ accountId: username, clientId: client.clientId });
  grant.addOIDCScope('openid offline_access');
  grant.addResourceScope(RESOURCE, 'monailabel');
  const grantId = await grant.save();

  const at = new provider.AccessToken({ accountId: username, client, grantId, gty: 'password', scope: 'monailabel' });
  at.resourceServer = new provider.ResourceServer(RESOURCE, resourceServer);
  const accessToken = await at.save();

  const rt = new provider.RefreshToken({
    accountId: username, client, grantId, gty: 'password', scope: 'openid offline_access', resource: RESOURCE,
    expiresWithSession: false,
  });
  const refreshToken = await rt.save();

  ctx.body = {
    access_token: accessToken, token_type: 'Bearer', expires_in: at.expiration, refresh_token: refreshToken,
    scope: 'monailabel',
  };
}

provider.registerGrantType('password', passwordGrant, ['username', 'password', 'scope']);
provider.listen(cfg.port, '127.0.0.1', () => console.log('ready', cfg.issuer));
