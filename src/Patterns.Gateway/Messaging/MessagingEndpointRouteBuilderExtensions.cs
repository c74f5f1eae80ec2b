using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Patterns.Gateway;
using Patterns.Gateway.Messaging;

namespace Microsoft.AspNetCore.Builder;

/// <summary>
/// Maps HTTP routes onto Patterns' messaging: a POST calls a request handler and answers with its response, or
/// publishes or sends the body and answers 202 Accepted. Errors are RFC 9457 problem details: 400 malformed body,
/// 404 no handler, 413 body too large, 415 not JSON, 500 handler failed, 503 transport unavailable, 504 timeout.
/// </summary>
public static class MessagingEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps <c>POST pattern</c> to the request handler of <typeparamref name="TRequest"/>, registered with
    /// <c>AddRequestResponse</c> on whichever transport is configured: the body is the request, the answer the response.
    /// </summary>
    /// <typeparam name="TRequest">The request type, read from the JSON body.</typeparam>
    /// <typeparam name="TResponse">The response type, written as JSON.</typeparam>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="pattern">The route pattern.</param>
    /// <param name="configure">Adjusts the body limit and timeout.</param>
    /// <returns>The endpoint's convention builder (for authorization, rate limiting and the like).</returns>
    public static IEndpointConventionBuilder MapRequest<TRequest, TResponse>(this IEndpointRouteBuilder endpoints, string pattern, Action<MessageEndpointOptions>? configure = null)
        where TRequest : notnull
    {
        var options = Options(endpoints, pattern, configure);
        return endpoints.MapMethods(pattern, [HttpMethods.Post], context => MessageEndpoint.HandleAsync(context, pattern, options, RequestTarget<TRequest, TResponse>.Call))
            .WithMetadata(options);
    }

    /// <summary>Maps <c>POST pattern</c> to publishing the body on a topic, answering 202 Accepted.</summary>
    /// <typeparam name="TMessage">The message type, read from the JSON body.</typeparam>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="pattern">The route pattern.</param>
    /// <param name="topic">The topic; by default the message type's name.</param>
    /// <param name="configure">Adjusts the body limit.</param>
    /// <returns>The endpoint's convention builder.</returns>
    public static IEndpointConventionBuilder MapPublish<TMessage>(this IEndpointRouteBuilder endpoints, string pattern, string? topic = null, Action<MessageEndpointOptions>? configure = null)
        where TMessage : notnull
    {
        var options = Options(endpoints, pattern, configure);
        var call = MessageTarget<TMessage>.Publish(topic);
        return endpoints.MapMethods(pattern, [HttpMethods.Post], context => MessageEndpoint.HandleAsync(context, pattern, options, call)).WithMetadata(options);
    }

    /// <summary>Maps <c>POST pattern</c> to sending the body to a queue, answering 202 Accepted.</summary>
    /// <typeparam name="TMessage">The message type, read from the JSON body.</typeparam>
    /// <param name="endpoints">The endpoint route builder.</param>
    /// <param name="pattern">The route pattern.</param>
    /// <param name="queue">The queue.</param>
    /// <param name="configure">Adjusts the body limit.</param>
    /// <returns>The endpoint's convention builder.</returns>
    public static IEndpointConventionBuilder MapSend<TMessage>(this IEndpointRouteBuilder endpoints, string pattern, string queue, Action<MessageEndpointOptions>? configure = null)
        where TMessage : notnull
    {
        ArgumentException.ThrowIfNullOrEmpty(queue);
        var options = Options(endpoints, pattern, configure);
        var call = MessageTarget<TMessage>.Send(queue);
        return endpoints.MapMethods(pattern, [HttpMethods.Post], context => MessageEndpoint.HandleAsync(context, pattern, options, call)).WithMetadata(options);
    }

    private static MessageEndpointOptions Options(IEndpointRouteBuilder endpoints, string pattern, Action<MessageEndpointOptions>? configure)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        var options = new MessageEndpointOptions();
        configure?.Invoke(options);
        if (options.MaxBodyBytes <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(configure), options.MaxBodyBytes, $"MessageEndpointOptions.MaxBodyBytes of '{pattern}' must be positive.");
        }

        if (options.Timeout is { } t && t <= TimeSpan.Zero && t != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(configure), t, $"MessageEndpointOptions.Timeout of '{pattern}' must be positive.");
        }

        return options;
    }
}
