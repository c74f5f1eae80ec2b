using System.Diagnostics.CodeAnalysis;
using Microsoft.AspNetCore.Http;

namespace Patterns.Gateway.Configuration;

/// <summary>Where a sticky split reads its routing key: a header, a cookie or a claim of the authenticated user.</summary>
internal sealed class RoutingKeySource
{
    private RoutingKeySource(char kind, string name)
    {
        Kind = kind;
        Name = name;
    }

    public char Kind { get; }

    public string Name { get; }

    public static bool TryParse(string? text, [NotNullWhen(true)] out RoutingKeySource? source)
    {
        source = null;
        var colon = text?.IndexOf(':', StringComparison.Ordinal) ?? -1;
        if (text is null || colon <= 0 || colon == text.Length - 1)
        {
            return false;
        }

        var kind = text[..colon].Trim().ToUpperInvariant();
        var name = text[(colon + 1)..].Trim();
        source = kind switch
        {
            "HEADER" => new RoutingKeySource('h', name),
            "COOKIE" => new RoutingKeySource('c', name),
            "CLAIM" => new RoutingKeySource('l', name),
            _ => null,
        };
        return source is not null;
    }

    /// <summary>The request's routing key, or null when it has none (the request is then balanced by weight alone).</summary>
    public string? Read(HttpContext context) => Kind switch
    {
        'h' => context.Request.Headers.TryGetValue(Name, out var v) && v.Count > 0 && !string.IsNullOrEmpty(v[0]) ? v[0] : null,
        'c' => context.Request.Cookies.TryGetValue(Name, out var c) && !string.IsNullOrEmpty(c) ? c : null,
        _ => context.User.FindFirst(Name)?.Value,
    };
}
