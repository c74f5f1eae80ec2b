using System.Collections.Frozen;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Patterns.Gateway;
using Patterns.Gateway.Push;

namespace Microsoft.AspNetCore.Builder;

/// <summary>
/// Exposes pub/sub topics to HTTP clients: Server-Sent Events, a WebSocket multiplexing several topics, and long polling.
/// Every connection has a bounded buffer with a <see cref="SlowClientPolicy"/>; every topic keeps a bounded replay
/// buffer so a client resumes by its last event id.
/// </summary>
public static class PushEndpointRouteBuilderExtensions
{
    /// <summary>Maps <c>GET pattern</c> to a Server-Sent Events stream of <paramref name="topic"/>; a reconnect with <c>Last-Event-ID</c> resumes.</summary>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="pattern">The route pattern.</param>
    /// <param name="topic">The pub/sub topic.</param>
    /// <param name="configure">Buffer size and slow-client policy.</param>
    /// <returns>The endpoint's convention builder.</returns>
    public static IEndpointConventionBuilder MapServerSentEvents(this IEndpointRouteBuilder endpoints, string pattern, string topic, Action<PushOptions>? configure = null)
    {
        var options = Options(endpoints, pattern, topic, configure);
        return endpoints.MapMethods(pattern, [HttpMethods.Get], context => PushEndpoints.ServerSentEventsAsync(context, topic, options));
    }

    /// <summary>
    /// Maps <c>GET pattern</c> to a WebSocket over which a client subscribes to and unsubscribes from any of
    /// <paramref name="topics"/> with <c>{"type":"subscribe","topic":"t","lastEventId":n}</c> and
    /// <c>{"type":"unsubscribe","topic":"t"}</c>; messages arrive as <c>{"type":"message","topic":"t","id":n,"data":...}</c>.
    /// Call <c>app.UseWebSockets()</c> first.
    /// </summary>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="pattern">The route pattern.</param>
    /// <param name="topics">The topics a client may subscribe to.</param>
    /// <param name="configure">Buffer size and slow-client policy.</param>
    /// <returns>The endpoint's convention builder.</returns>
    public static IEndpointConventionBuilder MapWebSocketTopics(this IEndpointRouteBuilder endpoints, string pattern, IEnumerable<string> topics, Action<PushOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(topics);
        var set = topics.ToFrozenSet(StringComparer.Ordinal);
        if (set.Count == 0)
        {
            throw new ArgumentException($"The WebSocket endpoint '{pattern}' exposes no topic.", nameof(topics));
        }

        var options = Options(endpoints, pattern, set.First(), configure);
        return endpoints.MapMethods(pattern, [HttpMethods.Get], context => PushEndpoints.WebSocketAsync(context, set, options));
    }

    /// <summary>
    /// Maps <c>GET pattern</c> to long polling of <paramref name="topic"/>: the request is held until a message after
    /// <c>lastEventId</c> (query or <c>Last-Event-ID</c> header) arrives, or answers 204 after <see cref="PushOptions.LongPollTimeout"/>.
    /// </summary>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="pattern">The route pattern.</param>
    /// <param name="topic">The pub/sub topic.</param>
    /// <param name="configure">Timeout and batch size.</param>
    /// <returns>The endpoint's convention builder.</returns>
    public static IEndpointConventionBuilder MapLongPolling(this IEndpointRouteBuilder endpoints, string pattern, string topic, Action<PushOptions>? configure = null)
    {
        var options = Options(endpoints, pattern, topic, configure);
        return endpoints.MapMethods(pattern, [HttpMethods.Get], context => PushEndpoints.LongPollAsync(context, topic, options));
    }

    private static PushOptions Options(IEndpointRouteBuilder endpoints, string pattern, string topic, Action<PushOptions>? configure)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        ArgumentException.ThrowIfNullOrEmpty(topic);
        var options = new PushOptions();
        configure?.Invoke(options);
        options.Validate(pattern);
        return options;
    }
}
