using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.ServiceDiscovery;

namespace Patterns.PeerLinks;

/// <summary>Turns the configured peers into addresses through Microsoft.Extensions.ServiceDiscovery.</summary>
internal static class PeerDiscovery
{
    /// <summary>
    /// Resolves each peer as a service name (<c>http://billing</c>): every endpoint found becomes a peer, with the peer's
    /// scheme unless the endpoint names its own. A peer that resolves to nothing, or that no provider knows, is dialled
    /// as written (and reported down if nothing answers there), with a logged warning when <paramref name="log"/> is set
    /// (at start; a refresh logs only what changed). On a refresh (<paramref name="log"/> not set) a peer whose lookup
    /// fails or finds nothing returns <see langword="null"/> instead: a passing failure of the resolver must not unlink
    /// healthy peers and dial the written name in their place.
    /// </summary>
    public static async Task<IReadOnlyList<Uri>?> ResolveAsync(ServiceEndpointResolver resolver, IEnumerable<Uri> peers, ILogger logger, bool log, CancellationToken cancellationToken)
    {
        List<Uri> resolved = [];
        foreach (var peer in peers)
        {
            var name = peer.GetLeftPart(UriPartial.Authority);
            IReadOnlyList<ServiceEndpoint> endpoints;
            try
            {
                endpoints = (await resolver.GetEndpointsAsync(name, cancellationToken).ConfigureAwait(false)).Endpoints;
            }
            catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
            {
                if (!log)
                {
                    return null;
                }

                PeerLinksLog.NotResolved(logger, name, ex.Message);
                resolved.Add(peer);
                continue;
            }

            var uris = endpoints.Select(e => ToUri(peer, e.EndPoint)).OfType<Uri>().ToList();
            if (uris.Count == 0)
            {
                if (!log)
                {
                    return null;
                }

                PeerLinksLog.NotResolved(logger, name, "no endpoint");
                resolved.Add(peer);
                continue;
            }

            if (log)
            {
                PeerLinksLog.Resolved(logger, name, string.Join(", ", uris));
            }

            resolved.AddRange(uris);
        }

        return [.. resolved.Distinct()];
    }

    private static Uri? ToUri(Uri peer, EndPoint endpoint) => endpoint switch
    {
        UriEndPoint { Uri: var uri } when uri.IsAbsoluteUri => uri,
        DnsEndPoint dns => new UriBuilder(peer.Scheme, dns.Host, dns.Port > 0 ? dns.Port : peer.Port).Uri,
        IPEndPoint ip => new UriBuilder(peer.Scheme, ip.Address.ToString(), ip.Port).Uri,
        _ => null,
    };
}
