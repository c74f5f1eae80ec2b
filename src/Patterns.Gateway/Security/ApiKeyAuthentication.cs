using System.Security.Claims;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Patterns.Gateway;

/// <summary>Options of API-key authentication: which header carries the key and which client each key belongs to.</summary>
public sealed class ApiKeyAuthenticationOptions : AuthenticationSchemeOptions
{
    /// <summary>The default scheme name.</summary>
    public const string DefaultScheme = "ApiKey";

    /// <summary>Gets or sets the request header that carries the key.</summary>
    /// <value>The default is <c>X-Api-Key</c>.</value>
    public string HeaderName { get; set; } = "X-Api-Key";

    /// <summary>Gets the known keys, each mapped to its client's name; the name becomes the <c>sub</c> claim.</summary>
    public IDictionary<string, string> Keys { get; } = new Dictionary<string, string>(StringComparer.Ordinal);
}

/// <summary>Authenticates a request by its API key: a known key signs in its client, an unknown key fails, no key leaves the request anonymous.</summary>
internal sealed class ApiKeyAuthenticationHandler(IOptionsMonitor<ApiKeyAuthenticationOptions> options, ILoggerFactory logger, UrlEncoder encoder)
    : AuthenticationHandler<ApiKeyAuthenticationOptions>(options, logger, encoder)
{
    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (!Request.Headers.TryGetValue(Options.HeaderName, out var values) || values.Count == 0 || string.IsNullOrEmpty(values[0]))
        {
            return Task.FromResult(AuthenticateResult.NoResult());
        }

        if (!Options.Keys.TryGetValue(values[0]!, out var client))
        {
            return Task.FromResult(AuthenticateResult.Fail($"The key in header '{Options.HeaderName}' is not known."));
        }

        var identity = new ClaimsIdentity([new Claim("sub", client), new Claim(ClaimTypes.NameIdentifier, client)], Scheme.Name);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), Scheme.Name)));
    }
}
