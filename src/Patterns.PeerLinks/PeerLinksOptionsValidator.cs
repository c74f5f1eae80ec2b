using Microsoft.Extensions.Options;

namespace Patterns.PeerLinks;

/// <summary>Checks <see cref="PeerLinksOptions"/>, reporting every problem at once.</summary>
internal sealed class PeerLinksOptionsValidator : IValidateOptions<PeerLinksOptions>
{
    public ValidateOptionsResult Validate(string? name, PeerLinksOptions options)
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(options.NodeId))
        {
            errors.Add("PeerLinksOptions.NodeId must not be empty.");
        }

        if (options.ListenUri is null || (options.ListenUri.Scheme != Uri.UriSchemeHttp && options.ListenUri.Scheme != Uri.UriSchemeHttps))
        {
            errors.Add($"PeerLinksOptions.ListenUri must be an http:// or https:// address; it is '{options.ListenUri}'.");
        }
        else if (options.ListenUri.Scheme == Uri.UriSchemeHttps && options.ServerCertificate is null)
        {
            errors.Add("PeerLinksOptions.ListenUri is https:// but no ServerCertificate is set.");
        }

        foreach (var peer in options.Peers)
        {
            if (!peer.IsAbsoluteUri || (peer.Scheme != Uri.UriSchemeHttp && peer.Scheme != Uri.UriSchemeHttps))
            {
                errors.Add($"PeerLinksOptions.Peers contains '{peer}', which is not an absolute http:// or https:// address.");
            }
        }

        if (options.RequireClientCertificate && options.ServerCertificate is null)
        {
            errors.Add("PeerLinksOptions.RequireClientCertificate needs TLS: set ServerCertificate and an https:// ListenUri.");
        }

        if (options.HeartbeatInterval <= TimeSpan.Zero)
        {
            errors.Add($"PeerLinksOptions.HeartbeatInterval must be positive; it is {options.HeartbeatInterval}.");
        }

        if (options.HeartbeatTimeout <= options.HeartbeatInterval)
        {
            errors.Add($"PeerLinksOptions.HeartbeatTimeout ({options.HeartbeatTimeout}) must be longer than HeartbeatInterval ({options.HeartbeatInterval}).");
        }

        if (options.ReconnectGrace <= TimeSpan.Zero || options.AnnounceTimeout <= TimeSpan.Zero)
        {
            errors.Add("PeerLinksOptions.ReconnectGrace and AnnounceTimeout must be positive.");
        }

        if (options.FirstReconnectDelay <= TimeSpan.Zero || options.FirstReconnectDelay > TimeSpan.FromMilliseconds(50) || options.MaxReconnectDelay < options.FirstReconnectDelay)
        {
            errors.Add($"PeerLinksOptions.FirstReconnectDelay must be positive and at most 50 ms (it is {options.FirstReconnectDelay}), and MaxReconnectDelay at least as long.");
        }

        if (options.DiscoveryRefreshInterval <= TimeSpan.Zero)
        {
            errors.Add($"PeerLinksOptions.DiscoveryRefreshInterval must be positive; it is {options.DiscoveryRefreshInterval}.");
        }

        if (options.ReplayBufferBytes < 1024 * 1024)
        {
            errors.Add($"PeerLinksOptions.ReplayBufferBytes must be at least 1 MiB; it is {options.ReplayBufferBytes}.");
        }

        if (options.MaxMessageBytes < 1)
        {
            errors.Add($"PeerLinksOptions.MaxMessageBytes must be positive; it is {options.MaxMessageBytes}.");
        }

        if (options.TemporaryCredit < 1)
        {
            errors.Add($"PeerLinksOptions.TemporaryCredit must be positive; it is {options.TemporaryCredit}.");
        }

        if (options.Prefetch is < 0 or > 65_536)
        {
            errors.Add($"PeerLinksOptions.Prefetch must be between 0 and 65,536; it is {options.Prefetch}.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
