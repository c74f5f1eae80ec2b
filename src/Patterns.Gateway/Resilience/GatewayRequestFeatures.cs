using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Resilience;

/// <summary>A request body read into memory so that a retry can send it again.</summary>
internal sealed class BufferedBody(byte[] bytes)
{
    public byte[] Bytes { get; } = bytes;
}

/// <summary>A request body too large to buffer: the request goes once, and a retry is refused for <see cref="Reason"/>.</summary>
internal sealed class UnreplayableBody(string reason)
{
    public string Reason { get; } = reason;
}

/// <summary>Keys of the values the gateway carries on an outgoing <see cref="HttpRequestMessage"/>.</summary>
internal static class RequestOptionKeys
{
    public static readonly HttpRequestOptionsKey<DestinationState> Destination = new("Patterns.Gateway.Destination");
}
