// The page under test: the OpenFeature web SDK with the OFREP web provider, showing one flag.
// Query parameters: server (flag-server's base URL), env (X-Environment), token (a client token).
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const params = new URLSearchParams(location.search);
const headers = [['X-Environment', params.get('env') ?? 'production']];
if (params.get('token')) {
  headers.push(['Authorization', `Bearer ${params.get('token')}`]);
}
// Every value the page showed, with the wall-clock time it showed it (the test compares it with
// the time the write began, on the same machine).
window.shown = [];

async function main() {
  await OpenFeature.setContext({ targetingKey: 'browser-user' });
  await OpenFeature.setProviderAndWait(
    new OFREPWebProvider({ baseUrl: params.get('server'), headers, cacheMode: 'disabled' }),
  );
  const client = OpenFeature.getClient();
  const show = () => {
    const value = String(client.getBooleanValue('kill-switch', false));
    const element = document.getElementById('flag');
    if (element.textContent !== value) {
      element.textContent = value;
      window.shown.push({ value, at: Date.now() });
    }
  };
  show();
  client.addHandler(ProviderEvents.ConfigurationChanged, show);
  document.getElementById('status').textContent = 'ready';
}

main().catch((error) => {
  document.getElementById('status').textContent = `failed: ${error}`;
});
