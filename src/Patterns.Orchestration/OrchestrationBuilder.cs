using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.Activities;
using Patterns.Orchestration.Engine;

namespace Patterns.Orchestration;

/// <summary>Registers workflows, activities and correlated messages for <c>AddOrchestration</c>.</summary>
public sealed class OrchestrationBuilder
{
    internal OrchestrationBuilder(IServiceCollection services, OrchestrationOptions options)
    {
        Services = services;
        Options = options;
    }

    /// <summary>Gets the service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>Gets the engine's options; set them here (they are validated when the host starts).</summary>
    public OrchestrationOptions Options { get; }

    /// <summary>Registers a workflow type.</summary>
    /// <typeparam name="TWorkflow">The workflow; created from DI for each instance.</typeparam>
    /// <param name="name">Its name in histories and for <see cref="IWorkflowClient.StartAsync"/>; the class name when null.</param>
    /// <returns>This builder.</returns>
    [System.Runtime.CompilerServices.OverloadResolutionPriority(1)] // AddWorkflow<T>(null) names no workflow, as before the overload that declares types
    public OrchestrationBuilder AddWorkflow<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TWorkflow>(string? name = null)
        where TWorkflow : WorkflowBase
    {
        var definition = WorkflowDefinition.For<TWorkflow>(name);
        Services.Configure<OrchestrationTopology>(t => t.Workflows.Add(definition));
        return this;
    }

    /// <summary>
    /// Registers a workflow type and declares the signals, updates and queries it handles, whose types the host then checks
    /// at start like those of inputs, results and activities (<c>o.AddWorkflow&lt;Order&gt;(w =&gt; w.Signal&lt;Approval&gt;("approve"))</c>).
    /// </summary>
    /// <typeparam name="TWorkflow">The workflow; created from DI for each instance.</typeparam>
    /// <param name="declare">Declares its signals, updates and queries.</param>
    /// <param name="name">Its name in histories and for <see cref="IWorkflowClient.StartAsync"/>; the class name when null.</param>
    /// <returns>This builder.</returns>
    public OrchestrationBuilder AddWorkflow<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TWorkflow>(Action<WorkflowRegistration> declare, string? name = null)
        where TWorkflow : WorkflowBase
    {
        ArgumentNullException.ThrowIfNull(declare);
        var definition = WorkflowDefinition.For<TWorkflow>(name);
        declare(definition.Registration);
        Services.Configure<OrchestrationTopology>(t => t.Workflows.Add(definition));
        return this;
    }

    /// <summary>
    /// Registers every public instance method of <typeparamref name="TActivities"/> that returns a task as an activity named
    /// after the method (without an <c>Async</c> suffix). A method takes at most one input, plus an optional
    /// <see cref="ActivityContext"/> and <see cref="CancellationToken"/>. The class is resolved from each attempt's DI scope.
    /// </summary>
    /// <typeparam name="TActivities">The class.</typeparam>
    /// <returns>This builder.</returns>
    [RequiresUnreferencedCode("Activities found by reflection need their methods kept; use AddActivity for trimmed apps.")]
    [RequiresDynamicCode("Activities found by reflection read task results by reflection; use AddActivity for native AOT.")]
    public OrchestrationBuilder AddActivities<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicMethods | DynamicallyAccessedMemberTypes.PublicConstructors)] TActivities>()
        where TActivities : class
    {
        var definitions = ActivityRegistry.FromType(typeof(TActivities)).ToList();
        Services.Configure<OrchestrationTopology>(t => t.Activities.AddRange(definitions));
        return this;
    }

    /// <summary>Registers a delegate activity.</summary>
    /// <typeparam name="TInput">The input type.</typeparam>
    /// <typeparam name="TResult">The result type.</typeparam>
    /// <param name="name">The activity's name.</param>
    /// <param name="body">The activity.</param>
    /// <returns>This builder.</returns>
    public OrchestrationBuilder AddActivity<TInput, TResult>(string name, Func<TInput, ActivityContext, Task<TResult>> body)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(body);
        var definition = ActivityRegistry.FromDelegate(name, body);
        Services.Configure<OrchestrationTopology>(t => t.Activities.Add(definition));
        return this;
    }

    /// <summary>
    /// Registers an activity that is a method of <typeparamref name="TActivities"/>, resolved from each attempt's DI scope
    /// (or created with its constructor's services when it is not registered). This is what the generated
    /// <c>AddActivitiesFromAssembly()</c> calls for each method of an <see cref="ActivitiesAttribute"/> class; it needs no
    /// reflection beyond the constructor, so it is safe under trimming and NativeAOT.
    /// </summary>
    /// <typeparam name="TActivities">The class that declares the activity.</typeparam>
    /// <typeparam name="TInput">The input type (<c>object</c> for an activity without input: its input is not read).</typeparam>
    /// <typeparam name="TResult">The result type (<c>object</c> for an activity without result).</typeparam>
    /// <param name="name">The activity's name.</param>
    /// <param name="body">Calls the activity on the resolved instance.</param>
    /// <returns>This builder.</returns>
    public OrchestrationBuilder AddActivity<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TActivities, TInput, TResult>(
        string name, Func<TActivities, TInput, ActivityContext, Task<TResult>> body)
        where TActivities : class
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(body);
        var definition = ActivityRegistry.FromMethod(name, body);
        Services.Configure<OrchestrationTopology>(t => t.Activities.Add(definition));
        return this;
    }

    /// <summary>
    /// Delivers messages published to <paramref name="topic"/> to the workflow instance <paramref name="instanceId"/> names,
    /// where <see cref="WorkflowContext.WaitForMessageAsync{TMessage}"/> receives them (in arrival order; messages that
    /// arrive before the wait are kept). A redelivered copy of a message is applied once.
    /// </summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="topic">The topic (or pattern).</param>
    /// <param name="instanceId">Maps a message to the instance id it belongs to (the correlation key).</param>
    /// <returns>This builder.</returns>
    public OrchestrationBuilder CorrelateMessage<TMessage>(string topic, Func<TMessage, string> instanceId)
        where TMessage : notnull
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        ArgumentNullException.ThrowIfNull(instanceId);
        Services.AddPubSub(ps => ps.Subscribe<TMessage>(
            (message, context, ct) => new ValueTask(context.Services.GetRequiredService<Runtime.WorkflowRuntime>().DeliverMessageAsync(instanceId(message), message, context.MessageId, ct)),
            topic,
            o => o.ConsumerGroup = $"orchestration.{typeof(TMessage).Name}"));
        Services.Configure<OrchestrationTopology>(t => t.Messages.Add(typeof(TMessage)));
        return this;
    }

    /// <summary>Like <see cref="CorrelateMessage{TMessage}"/>, for messages sent to a queue (competing consumers across processes).</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <param name="queue">The queue.</param>
    /// <param name="instanceId">Maps a message to the instance id it belongs to.</param>
    /// <param name="concurrency">How many messages are applied at once (each instance is still one at a time).</param>
    /// <returns>This builder.</returns>
    public OrchestrationBuilder CorrelateQueueMessage<TMessage>(string queue, Func<TMessage, string> instanceId, int concurrency = 16)
        where TMessage : notnull
    {
        ArgumentException.ThrowIfNullOrEmpty(queue);
        ArgumentNullException.ThrowIfNull(instanceId);
        Services.AddMessageQueue(q => q.AddConsumer<TMessage>(
            queue,
            (message, context, ct) => new ValueTask(context.Services.GetRequiredService<Runtime.WorkflowRuntime>().DeliverMessageAsync(instanceId(message), message, context.MessageId, ct)),
            o => o.Concurrency = concurrency));
        Services.Configure<OrchestrationTopology>(t => t.Messages.Add(typeof(TMessage)));
        return this;
    }
}

/// <summary>What was registered with <see cref="OrchestrationBuilder"/>.</summary>
internal sealed class OrchestrationTopology
{
    public List<WorkflowDefinition> Workflows { get; } = [];

    public List<ActivityDefinition> Activities { get; } = [];

    /// <summary>The types of correlated messages, which histories record.</summary>
    public List<Type> Messages { get; } = [];
}
