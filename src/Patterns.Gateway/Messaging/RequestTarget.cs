using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Patterns.PubSub;
using Patterns.Queues;
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

    public override RequestDelegate CreateDelegate(string route, MessageEndpointOptions options) =>
        context => MessageEndpoint.HandleAsync(context, route, options, Call);
}

/// <summary>A message type that configuration may name in a publish or send route (<see cref="GatewayBuilder.AddMessageType{TMessage}"/>).</summary>
internal abstract class MessageTarget(string name)
{
    public string Name { get; } = name;

    /// <summary>The request delegate of a route that publishes the body on <paramref name="topic"/> (by the type's name when null).</summary>
    public abstract RequestDelegate CreatePublish(string route, string? topic, MessageEndpointOptions options);

    /// <summary>The request delegate of a route that sends the body to <paramref name="queue"/>.</summary>
    public abstract RequestDelegate CreateSend(string route, string queue, MessageEndpointOptions options);
}

internal sealed class MessageTarget<TMessage>(string name) : MessageTarget(name)
    where TMessage : notnull
{
    /// <summary>Publishes the message and answers 202 Accepted.</summary>
    public static Func<HttpContext, TMessage, IMessageSerializer, Task> Publish(string? topic) => async (context, message, _) =>
    {
        var publisher = context.RequestServices.GetRequiredService<IPublisher>();
        if (topic is null)
        {
            await publisher.PublishAsync(message, context.RequestAborted).ConfigureAwait(false);
        }
        else
        {
            await publisher.PublishAsync(topic, message, context.RequestAborted).ConfigureAwait(false);
        }

        context.Response.StatusCode = StatusCodes.Status202Accepted;
    };

    /// <summary>Sends the message to a queue and answers 202 Accepted.</summary>
    public static Func<HttpContext, TMessage, IMessageSerializer, Task> Send(string queue) => async (context, message, _) =>
    {
        await context.RequestServices.GetRequiredService<IQueueSender>().SendAsync(queue, message, context.RequestAborted).ConfigureAwait(false);
        context.Response.StatusCode = StatusCodes.Status202Accepted;
    };

    public override RequestDelegate CreatePublish(string route, string? topic, MessageEndpointOptions options)
    {
        var call = Publish(topic);
        return context => MessageEndpoint.HandleAsync(context, route, options, call);
    }

    public override RequestDelegate CreateSend(string route, string queue, MessageEndpointOptions options)
    {
        var call = Send(queue);
        return context => MessageEndpoint.HandleAsync(context, route, options, call);
    }
}
