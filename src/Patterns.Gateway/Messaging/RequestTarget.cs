using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Patterns.RequestResponse;
using Patterns.Serialization;

namespace Patterns.Gateway.Messaging;

/// <summary>
/// A request type that configuration may name in a request route (<see cref="GatewayBuilder.AddRequestType{TRequest, TResponse}"/>):
/// the typed call is built here, in code, so a route read from configuration needs no reflection.
/// </summary>
internal abstract class RequestTarget(string name)
{
    public string Name { get; } = name;

    public abstract Type RequestType { get; }

    /// <summary>The request delegate of a route that calls this request type's handler.</summary>
    public abstract RequestDelegate CreateDelegate(string route, MessageEndpointOptions options);
}

internal sealed class RequestTarget<TRequest, TResponse>(string name) : RequestTarget(name)
    where TRequest : notnull
{
    /// <summary>Sends the request through <see cref="IRequestClient"/> with the endpoint's timeout and writes the response as the 200 answer.</summary>
    public static readonly Func<HttpContext, TRequest, IMessageSerializer, Task> Call = static async (context, request, serializer) =>
    {
        var client = context.RequestServices.GetRequiredService<IRequestClient>();
        var options = context.GetEndpoint()?.Metadata.GetMetadata<MessageEndpointOptions>();
        var response = options?.Timeout is { } timeout
            ? await client.SendAsync<TRequest, TResponse>(request, timeout, context.RequestAborted).ConfigureAwait(false)
            : await client.SendAsync<TRequest, TResponse>(request, context.RequestAborted).ConfigureAwait(false);
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = serializer.ContentType;
        serializer.Serialize(context.Response.BodyWriter, response!, typeof(TResponse));
        await context.Response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    };

    public override Type RequestType => typeof(TRequest);

    public override RequestDelegate CreateDelegate(string route, MessageEndpointOptions options) =>
        context => MessageEndpoint.HandleAsync(context, route, options, Call);
}
